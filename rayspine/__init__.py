"""rayspine: disc masks, geometry and latent shape features from lumbar-spine MRI archives."""

__version__ = "0.1.0"
