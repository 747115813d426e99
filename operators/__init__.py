"""AI Factory Pipelines: Airflow operators, hooks and triggers, and the clients behind them.

Subpackages are grouped by what they talk to. Modules used on compute nodes import without Airflow.
"""
