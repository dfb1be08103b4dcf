"""The two folders a person may fill by hand, relative to the repository root (DVC runs every stage there).

What the stages write has its home in :mod:`ultrasound_transfer.outputs`,
one module per output; these two are inputs as well:

* ``data/raw/<dataset>/``: a dataset as published, fetched by ``download`` or
  placed by hand (the stage's output is kept, ``persist``);
* ``models/backbones/``: backbone weight files a person provides (``weights``
  names one), a dependency of every ``finetune``.
"""

from pathlib import Path

RAW_DIR = Path("data/raw")
BACKBONES_DIR = Path("models/backbones")
