"""``StoredLink``: an extra link whose URL the task stores in XCom under the link's key (Airflow 3 reads it there)."""

from __future__ import annotations

from airflow.sdk import BaseOperatorLink


class StoredLink(BaseOperatorLink):
    def get_link(self, operator, *, ti_key) -> str:
        from airflow.providers.common.compat.sdk import XCom

        return XCom.get_value(key=self.xcom_key, ti_key=ti_key) or ""

    @classmethod
    def store(cls, context, url: str) -> None:
        context["ti"].xcom_push(key=cls().xcom_key, value=url)
