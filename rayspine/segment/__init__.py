"""Paper step 1: disc segmentation with MONAI networks.

``networks/`` (the registered networks), ``data`` (scans to training items, patient splits, patch
transforms), ``infer`` (``Segmenter``: a trained model at inference; imports nothing of training),
``train`` (the Ray Train loop), ``command`` (``rayspine train-seg``).
"""
