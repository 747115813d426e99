"""Helpers that run inside Slurm jobs (job-runtime environment): no Airflow imports here."""
