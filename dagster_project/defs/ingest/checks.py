"""Checks on the ingest group: row accounting of every canonical table, and the quality (schema, keys,
nulls) of the canonical tables and of the profile feature tables the ingest writes beside them."""

from dagster_project.check_factories import row_accounting_check, table_quality_check
from ppm_platform.data import schemas

ROW_ACCOUNTING = [row_accounting_check(t) for t in ("items", "users", "interactions", "queries")]

TABLE_QUALITY = [
    table_quality_check("items", "items_table_quality", "items", schemas.ITEMS, ["item_id"],
                        ["item_id", "title", "created_at"], {}),
    table_quality_check("users", "users_table_quality", "users", schemas.USERS, ["user_id"],
                        ["user_id"], {}),
    table_quality_check("interactions", "interactions_table_quality", "interactions",
                        schemas.INTERACTIONS, ["user_id", "item_id", "event_timestamp"],
                        ["user_id", "item_id", "event_timestamp", "click", "order"], {}),
    table_quality_check("items", "item_profile_table_quality", "item_profile", schemas.ITEM_PROFILE,
                        ["item_id"], ["item_id", "event_timestamp"], {}),
    table_quality_check("users", "user_profile_table_quality", "user_profile", schemas.USER_PROFILE,
                        ["user_id"], ["user_id", "event_timestamp"], {}),
]
