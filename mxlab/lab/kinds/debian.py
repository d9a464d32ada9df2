"""What the kinds running Debian's packages share: one image with the mail packages
(built on first use from the debootstrap base), the generated files, and how a local
instance runs: as root, in its own PID namespace and a private mount namespace where
its node directory is at ``/mnt`` (the lab directory is 0700, and Postfix's and
Dovecot's unprivileged processes must reach their queue, sockets and mail) and, when
it resolves names, /etc/resolv.conf names the lab DNS."""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from mxlab.lab import labdir
from mxlab.lab.kinds.base import Kind, node_root
from mxlab.lab.plan import LabPlan, NodePlan
from mxlab.nodes.config import RelayNodeConfig

if TYPE_CHECKING:
    import docker

    from mxlab.lab.image import Progress

# one image for every mail kind: the postfix kind needs Dovecot's SASL too
MAIL_PACKAGES = ("postfix", "dovecot-core", "dovecot-imapd", "dovecot-pop3d", "dovecot-lmtpd")
# the image every Debian kind runs: one debootstrap build (minutes) serves them all
IMAGE_PACKAGES = (*MAIL_PACKAGES, "nsd", "unbound")
LOCAL_ROOT = "/mnt"  # where a local instance sees its node directory


class DebianKind(Kind):
    """A kind whose software comes from Debian's packages."""

    packages: tuple[str, ...] = MAIL_PACKAGES  # what a local instance needs installed
    programs: tuple[str, ...] = ()  # what a local instance needs on the PATH
    files: tuple[str, ...] = ()  # and in the file system (e.g. Dovecot's LMTP server)
    resolves: bool = False  # asks the lab DNS through the C library (port 53 only)

    def image(self, client: docker.DockerClient, progress: Progress) -> str:
        from mxlab.lab.image import packages_image

        return packages_image(client, IMAGE_PACKAGES, progress)

    def local_problem(self, plan: LabPlan, node: NodePlan) -> str | None:
        path = os.environ.get("PATH", "") + ":/usr/sbin"
        for program in self.programs:
            if shutil.which(program, path=path) is None or not all(map(os.path.exists, self.files)):
                return (
                    f"{program} is not installed here (apt-get install {' '.join(self.packages)})"
                )
        if os.geteuid() != 0:
            return "its local instance needs root (or use --runtime docker)"
        dns = plan.dns_node.ports["dns"]
        if self.resolves and dns != 53:
            return f"it asks DNS on port 53 only, the lab's is on {dns} (unpin settings.ports.dns)"
        return None

    def root(self, plan: LabPlan, node: NodePlan) -> str:
        """The node directory as the node's processes see it."""
        return LOCAL_ROOT if plan.runtime == "local" else str(node_root(node))

    def run(self, plan: LabPlan, node: NodePlan, script: str) -> list[str]:
        """The command running shell ``script`` (its last step ``exec``s the daemon); under
        the usual umask (the daemons' own users must reach the directories they make)
        and in UTC, whatever the host's or container's zone."""
        script = f"umask 022; export TZ=UTC; {script}"  # log stamps as trace reads them
        if plan.runtime != "local":
            return ["sh", "-c", script]
        ndir = shlex.quote(str(labdir.node_dir(plan, node.name)))
        mounts = f"mount --bind {ndir} {LOCAL_ROOT}"
        if self.resolves:
            mounts += f" && mount --bind {LOCAL_ROOT}/resolv.conf /etc/resolv.conf"
        # its own PID namespace too: when the node's first process ends (SIGKILL
        # included), the kernel ends every process of the node, daemons that left the
        # process group (Postfix's master) as well
        unshare = ["unshare", "--pid", "--fork", "--mount", "--propagation", "private"]
        return [*unshare, "sh", "-c", f"{mounts} || exit 1; {script}"]

    def local_exec(self, pid: int | None, argv: list[str]) -> list[str]:
        """Inside the node's namespaces (its directory at /mnt, its processes): the
        first process in them is the child of ``unshare``."""
        children = Path(f"/proc/{pid}/task/{pid}/children")
        try:
            first = children.read_text().split()[0] if pid is not None else ""
        except (OSError, IndexError):
            first = ""
        if not first:
            return argv
        return ["nsenter", f"--target={first}", "--mount", "--pid", "--", *argv]

    def write_files(self, plan: LabPlan, node: NodePlan, files: dict[str, str]) -> None:
        """Write the generated files (paths relative to the node directory); the node
        directory becomes 0711, so the daemons' own users reach what lies inside."""
        ndir = labdir.node_dir(plan, node.name)
        with labdir.private():
            for rel, text in files.items():
                path = ndir / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        if self.resolves:  # read by the daemons' unprivileged processes
            resolv = Path(ndir, "resolv.conf")
            cfg = node.config  # a relay may ask the lab's resolver instead of its DNS
            server = cfg.dns.host if isinstance(cfg, RelayNodeConfig) else plan.dns_node.address
            resolv.write_text(f"nameserver {server}\noptions attempts:2 timeout:2\n")
            resolv.chmod(0o644)
        ndir.chmod(0o711)
