"""Evaluate the logistic-regression classifier (scikit-learn) and its champion on the held-out breast-cancer split.

Runs inside a Slurm job; the scoring is the shared binary-classifier evaluation
(``operators/jobs/evaluate.py``). Usage::

    python evaluate.py --data-dir DIR --challenger MODEL_URI [--champion MODEL_URI] --output OUT_JSON
"""

from operators.jobs.evaluate import main

TARGET = "diagnosis"
CLASSES = [0, 1]  # 0 malignant, 1 benign (scikit-learn's encoding); metrics treat 1 as positive

if __name__ == "__main__":
    main(TARGET, CLASSES)
