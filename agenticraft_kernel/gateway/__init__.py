"""The secure kernel under Jupyter Enterprise Gateway's container process proxies.

Two sides: ``launch_docker.py`` is the script EG runs (in EG's own environment) to start the
kernel's container with our limits; ``launch`` runs inside that container and speaks EG's
launcher protocol (``handshake``) before starting the secure kernel; ``kernelspec`` writes the
kernelspec directories EG reads.
"""
