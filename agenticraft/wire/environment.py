"""The environment a sandbox inherits from the host: an allow-list, so that no credential or
setting of the host rides along in a variable. Both sides apply it: the host when it starts the
zygote, the zygote when it forks a worker."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

#: Variables a sandboxed worker keeps (it also gets HOME and TMPDIR pointing at its scratch).
ENV_ALLOW = ("PATH", "LANG", "LC_ALL", "TZ")
#: The zygote keeps a few more: they steer how the libraries it preloads initialise (the
#: locale's character type, OpenBLAS's CPU detection), which is settled before any worker forks.
ZYGOTE_ENV_ALLOW = (*ENV_ALLOW, "LC_CTYPE", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def allowed_env(environ: Mapping[str, str], names: Iterable[str] = ENV_ALLOW) -> dict[str, str]:
    """The variables of ``environ`` on the allow-list ``names``."""
    keep = frozenset(names)
    return {key: value for key, value in environ.items() if key in keep}
