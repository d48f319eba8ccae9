"""Paper step 5: what the latent features encode.

``traversal`` (sweep a latent, decode, measure), ``correlation`` (latent x geometry, latent x
latent), ``command`` (``rayspine interpret``).
"""
