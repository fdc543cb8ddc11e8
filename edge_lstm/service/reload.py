"""Hot reload (SIGHUP, `systemctl reload`): read the configuration and the model again.

- The same state signature (features, state shapes, outputs): the new model is served in place and every
  stream keeps its state: no warm-up, no reading lost, acknowledgements intact. Its calibration applies
  at once; the durable state is re-bound to its file hash and a checkpoint is requested.
- Another signature: the daemon stops cleanly and the CLI re-executes itself (same pid): the old
  checkpoint is set aside at restore and every stream starts fresh, with a log line.
- A new configuration or model that does not load: refused with a log line; the daemon runs on.
- Settings that only a restart can apply (broker, topics, state directory, engine, scoring) are logged
  as `reload_needs_restart`; the model and `[alarm]` are applied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..contract import ModelFormatError
from ..engine import Engine
from ..ports import SpillStore, StateStore, StepModel
from .checkpoints import CheckpointPolicy
from .config import Settings
from .control import Control
from .requested import Requested
from .startup import StartupError

_APPLIED = {"model", "alarm"}  # the rest (log level included) waits for a restart


class Reloadable(Protocol):
    """What a reload reads from the daemon (`daemon.Daemon`), and what it sets: the settings and the
    model served, or the stop reason and the request to restart."""

    settings: Settings
    model: StepModel
    restart_requested: bool

    @property
    def reloader(self) -> Callable[[], tuple[Settings, StepModel]] | None: ...
    @property
    def requested(self) -> Requested: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def control(self) -> Control: ...
    @property
    def log(self) -> Any: ...
    @property
    def durable(self) -> StateStore | None: ...
    @property
    def checkpoints(self) -> CheckpointPolicy | None: ...
    @property
    def spill(self) -> SpillStore | None: ...


def reload(d: Reloadable) -> None:
    if d.reloader is None:
        d.log.warning("reload_unavailable", detail="this daemon was started without a configuration to re-read")
        return
    try:
        settings, model = d.reloader()
    except (StartupError, ModelFormatError, OSError) as e:
        d.log.warning("reload_refused", error=str(e), detail="serving on with the configuration and model as before")
        return
    old = d.settings
    new = dict(settings)  # section name -> section
    changed = sorted(k for k, section in old if section != new[k])
    needs_restart = [k for k in changed if k not in _APPLIED]
    if needs_restart:
        d.log.warning("reload_needs_restart", settings=needs_restart, detail="not applied until a restart")
    sha = model.sha256
    if not d.engine.swap_model(model, d.engine.scorer.config, settings.alarm.policy()):
        d.log.warning(
            "reload_model_changed",
            model=model.meta.name,
            model_version=model.meta.version,
            detail="another state signature: restarting, every stream starts fresh",
        )
        d.requested.stop_reason = "reload with a model of another state signature"
        d.restart_requested = True
        return
    d.model = model
    if d.control.ha is not None:
        d.control.ha.model_changed(model.meta)  # Home Assistant's stream devices show the new model
    d.settings = old.model_copy(update={"model": settings.model, "alarm": settings.alarm})
    if d.durable is not None and sha:
        d.durable.rebind(sha)
        if d.checkpoints is not None:
            d.checkpoints.request()  # the journal from here on belongs to the new model's checkpoint
    if d.spill is not None and sha:
        d.spill.rebind(sha)
    d.log.info(
        "reloaded",
        model=model.meta.name,
        model_version=model.meta.version,
        streams_kept=len(d.engine.table),
        changed=changed,
    )
