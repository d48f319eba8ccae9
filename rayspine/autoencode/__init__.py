"""Paper step 2: the disc autoencoder and the bottleneck sweep.

``networks/`` (registered autoencoders), ``train`` (training to eval-mode IoU > 0.995, saving),
``infer`` (a trained model: encode, decode; imports nothing of training), ``sweep`` (one Ray Tune
trial per bottleneck, ``rayspine train-ae``), ``latent`` (latent columns for a measured table).
"""
