"""The model-product pipeline: from a spec to an Airflow DAG and the tasks it runs."""
