"""What a person looks at: matplotlib figures (``figures``: data in, Figure out) and ``report.html``
(``html``: one self-contained page per scored output folder)."""
