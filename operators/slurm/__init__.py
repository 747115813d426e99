"""Talking to Slurm clusters. ``rest`` imports without Airflow; ``hooks`` needs Airflow."""
