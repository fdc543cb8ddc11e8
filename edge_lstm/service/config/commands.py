"""`[commands]`: commands over MQTT (service/commands.py). Off by default; limit who may publish on the
topic with the broker's ACL (docs/operations.md)."""

from __future__ import annotations

from pydantic import Field, field_validator

from .base import Section, plain_topic

__all__ = ["CommandSettings"]


class CommandSettings(Section):
    enabled: bool = Field(
        default=False,
        description="accept commands over MQTT (`reset`, `inspect`, `checkpoint`, `reload`, `remove`; "
        'docs/operations.md, "Commands over MQTT")',
    )
    topic: str = Field(
        default="edge-lstm/command",
        min_length=1,
        description="where commands arrive; replies go to the v5 response topic, else `<topic>/reply`",
    )

    response_prefix: str = Field(
        default="",
        description='MQTT v5 Response Topics must start with this (`""`: any topic that is not one of the '
        "daemon's own, a `$` topic or under the discovery prefix; wildcards never); a refused one gets its "
        "error on `<topic>/reply`",
    )

    @field_validator("topic", "response_prefix")
    @classmethod
    def _plain(cls, v: str) -> str:
        return plain_topic(v) if v else v
