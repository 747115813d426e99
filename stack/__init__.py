"""The local AI-factory stack: real Slurm, S3, MLflow, MLServer and Airflow on loopback."""
