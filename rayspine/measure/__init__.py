"""Paper step 3: disc instances and levels, centre-of-mass crops, and standard disc geometry.

``instances`` (discs of a label or binary mask), ``crops`` (the autoencoder's 64^3 input),
``geometry`` (height, widths, angles), ``scan`` (one mask -> rows and crops), ``command``
(``rayspine measure`` over an archive). All but ``command`` are pure numpy.
"""
