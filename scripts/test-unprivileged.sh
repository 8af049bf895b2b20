#!/usr/bin/env bash
# Run the sandbox's security suites again as an unprivileged OS user. CI runs as root, and root
# is exempt from some limits (RLIMIT_NPROC) and holds capabilities a shared-server user does not,
# so the escape suite must also pass where it matters: as an ordinary user.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "test-unprivileged: already unprivileged; the main suite covers this" >&2
    exit 0
fi
user=acs-ci
id -u "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$user"
home=$(getent passwd "$user" | cut -d: -f6)
work="$home/agenticraft"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT  # the copy and its virtualenv are not kept
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work"
chown -R "$user:$user" "$work"
# Emulate systemd's Delegate=yes for this user's service: a cgroup v2 group whose directory and
# cgroup.procs, cgroup.subtree_control and cgroup.threads belong to the user (plus systemd's
# trusted.delegate mark); the run starts inside it, so the sandbox's units are v2 groups there.
# (Which controllers it offers is up to the host; the v2 core works without any.)
deleg=""
for mount in /sys/fs/cgroup /sys/fs/cgroup/unified; do
    if [ -f "$mount/cgroup.controllers" ] && [ -w "$mount" ]; then
        deleg="$mount/agenticraft-ci-$$"
        break
    fi
done
if [ -n "$deleg" ]; then
    mkdir "$deleg"
    chown "$user:$user" "$deleg" "$deleg/cgroup.procs" "$deleg/cgroup.subtree_control" \
        "$deleg/cgroup.threads"
    python3 -c 'import os, sys; os.setxattr(sys.argv[1], "trusted.delegate", b"1")' "$deleg" \
        || true
    # the run's processes are gone at exit; remove its groups depth-first
    trap 'rm -rf "$work"; find "$deleg" -depth -type d -exec rmdir {} + 2>/dev/null || true' EXIT
fi
# The interpreter must be one this user can reach (a pyenv under /root is not).
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3)
enter=""  # the shell moves itself into the delegated group, then becomes the user
[ -n "$deleg" ] && enter="echo \$\$ > '$deleg/cgroup.procs' && "
sh -c "${enter}exec \"\$@\"" sh \
setpriv --reuid="$user" --regid="$user" --init-groups --reset-env -- env HOME="$home" \
    PATH=/usr/local/bin:/usr/bin:/bin AGENTICRAFT_EXPECT_CGROUP_V2="${deleg:+1}" sh -euc "
        cd '$work'
        PYTHON='$py' bash scripts/setup-venv.sh '' --group test
        echo \"unprivileged run as \$(id -un) (uid \$(id -u))\"
        .venv/bin/python -m pytest -p no:cacheprovider tests/sandbox/test_process_escapes.py \
            tests/sandbox/test_process_sessions.py tests/sandbox/test_process_mechanisms.py \
            tests/jail/test_confine_landlock_seccomp.py tests/sandbox/test_resource_control.py \
            tests/sandbox/test_process_private_env.py tests/sandbox/test_egress.py \
            tests/sandbox/test_cgroup_v2.py tests/jail/test_cgroups_v2_files.py \
            tests/sandbox/test_writeback.py tests/sandbox/test_process_session_undo.py \
            tests/jail/test_blank_ahead.py tests/sandbox/test_page_sharing.py
    "
