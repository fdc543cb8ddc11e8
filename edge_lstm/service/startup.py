"""Bad starts: one error type that carries the exit code, and the checks `edge-lstm run` makes first.

Every failure the operator must fix before the daemon can run (config, model, state directory, TLS
files, password file, credentials directory) is a `StartupError`: `cli/run.py` prints its message as
one line on stderr and exits with `exit_code` (2). The systemd unit's `RestartPreventExitStatus=2`
then stops systemd from restarting into the same error forever (exit 1 would be a restart loop).

Messages name the setting as a dotted key and as the environment variable that sets it:

    state_dir: /var/lib/edge-lstm: Read-only file system [env EDGE_LSTM_STATE_DIR]
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Settings

from .errors import ENV_PREFIX, EXIT_STARTUP, StartupError, env_var, setting_error

__all__ = ["ENV_PREFIX", "EXIT_STARTUP", "StartupError", "env_var", "setting_error", "preflight"]


def _why(e: OSError) -> str:
    return e.strerror or str(e)


def check_state_dir(path: Path) -> None:
    """Create the state directory if needed and prove it writable (a file created, then removed)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise setting_error("state_dir", f"{path}: exists and is not a directory") from None
    except OSError as e:
        raise setting_error("state_dir", f"{path}: cannot create: {_why(e)}") from None
    probe = path / f".write-test.{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        raise setting_error("state_dir", f"{path}: not writable: {_why(e)}") from None
    os.close(fd)
    try:
        probe.unlink()
    except OSError as e:
        raise setting_error("state_dir", f"{path}: not writable: {_why(e)}") from None


def check_readable(key: str, path: Path) -> None:
    """A file the daemon will read at start (TLS material, a password file) exists and is readable."""
    try:
        with open(path, "rb"):
            pass
    except IsADirectoryError:
        raise setting_error(key, f"{path}: is a directory, not a file") from None
    except OSError as e:
        raise setting_error(key, f"cannot read {path}: {_why(e)}") from None


def check_tls(settings: Settings) -> None:
    """The TLS files exist, are readable and parse, checked as paho will load them (`tls_set`)."""
    t = settings.mqtt.tls
    if not t.enabled:
        return
    for key, path in (("ca_file", t.ca_file), ("cert_file", t.cert_file), ("key_file", t.key_file)):
        if path is not None:
            check_readable(f"mqtt.tls.{key}", path)
    ctx = ssl.create_default_context()
    if t.ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(t.ca_file))
        except (ssl.SSLError, OSError, ValueError) as e:
            raise setting_error("mqtt.tls.ca_file", f"{t.ca_file}: not a PEM CA certificate: {e}") from None
    if t.cert_file is not None and t.key_file is not None:
        try:
            ctx.load_cert_chain(certfile=str(t.cert_file), keyfile=str(t.key_file))
        except (ssl.SSLError, OSError, ValueError) as e:
            raise setting_error(
                "mqtt.tls.cert_file",
                f"{t.cert_file} with key {t.key_file} (mqtt.tls.key_file): not a PEM certificate and its key: {e}",
            ) from None


def check_credentials_directory(environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """systemd sets $CREDENTIALS_DIRECTORY only when the unit loads credentials: it must be a directory."""
    creds = environ.get("CREDENTIALS_DIRECTORY")
    if creds and not Path(creds).is_dir():
        raise StartupError(f"CREDENTIALS_DIRECTORY: {creds} is not a directory [env CREDENTIALS_DIRECTORY]")


def preflight(settings: Settings) -> None:
    """Everything `edge-lstm run` needs from the file system, checked before the model is loaded."""
    check_credentials_directory()
    settings.mqtt.resolved_password()  # ConfigError naming mqtt.password_file when unreadable
    check_tls(settings)
    if settings.checkpoint.enabled or settings.engine.evicted == "spill":
        check_state_dir(Path(settings.state_dir))
