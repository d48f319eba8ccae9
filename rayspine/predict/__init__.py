"""Paper step 4: disc-narrowing prediction (XGBoost, 5-fold CV, F1 and AUC with 95 % CIs).

``cv`` (folds, fits, metrics; pure), ``command`` (``rayspine cv``: files in, Table 1 out).
"""
