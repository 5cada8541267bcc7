"""Train and evaluate PRN in one command: the ``prn-train`` command, run from a checkout.

Everything lives in ``prn_model.train_cli``; ``python recipes/train_prn.py --help`` lists the
options. Multi-GPU / multi-node: ``torchrun --nproc_per_node N recipes/train_prn.py ...``.
"""

import sys

from prn_model.train_cli import main

if __name__ == "__main__":
    sys.exit(main(prog="train_prn"))
