"""``python -m ultrasound_transfer``: the same as the ``ultrasound-transfer`` command."""

from ultrasound_transfer.cli import main

main()
