"""What a sandbox container runs: the zygote, connected to the host through a unix socket in a
bind-mounted directory, or ``doctor`` (the image's default command).

Started (under Docker's init, which reaps orphans) as
``python3 -I -c "...; main()" PACKAGE_ROOT SOCKET DISABLED PRELOAD``. A unix socket rather than
the container's attached stdin/stdout because the zygote hands each worker's channel and output
pipes to the supervisor with SCM_RIGHTS, which needs a unix socket; and the host learns the
zygote's host pid from SO_PEERCRED on it (the supervisor watches and kills by host pid).
When the host end closes (the manager closed, or its process died) the zygote exits, and with
it the container, which Docker then removes.
"""

from __future__ import annotations

import json
import os
import socket
import sys


def main() -> None:
    path = sys.argv[1]
    control = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    control.connect(path)
    fd = control.detach()
    os.set_inheritable(fd, False)
    sys.argv = [sys.argv[0], str(fd), *sys.argv[2:]]
    from agenticraft.jail import zygote
    zygote.main()


def doctor() -> None:
    """Print, as JSON, which confinement mechanisms work inside this container."""
    from agenticraft.jail.confine import probe
    disabled = [d for d in (sys.argv[1] if len(sys.argv) > 1 else "").split(",") if d]
    print(json.dumps({"euid": os.geteuid(), "python": sys.version.split()[0],
                      "mechanisms": probe.mechanisms(disabled)}))


if __name__ == "__main__":
    main()
