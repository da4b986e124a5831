"""The login user of every host of the fleet (scripts/test-deploy.sh runs this file with --hosts=ansible://all), over
SSH as Ansible comes in (testinfra's ansible backend, the
inventory's user, key and pinned host keys, then sudo): not root, no root-equivalent group, no password, and no
secret it does not need: it reads none of the fleet's keys and passwords on the host, cannot use the Docker engine,
and its home holds only its authorized key. One fact per test."""

from __future__ import annotations

import pytest

#: Files that hold a secret on some host of the fleet: the load balancer's TLS key, its configuration (the stats
#: password), the password Prometheus scrapes it with, the system's password hashes.
SECRETS = ["/etc/haproxy/tls/tritonfleet.pem", "/etc/haproxy/haproxy.cfg", "/etc/prometheus/haproxy-stats-password",
           "/etc/shadow", "/etc/ssh/ssh_host_ed25519_key"]
#: Groups that are root by another name (docker: the engine's socket starts any container).
ROOT_GROUPS = {"root", "sudo", "wheel", "adm", "docker", "disk", "shadow"}


@pytest.fixture
def login(host) -> str:
    """The user SSH logged in as: the one sudo was run by."""
    user = host.check_output("echo ${SUDO_USER:-}")
    assert user, "the commands do not run through sudo: ansible_become is off, or the login is root"
    return user


def test_the_login_user_is_not_root(host, login):
    assert host.check_output(f"id -u {login}") != "0"


def test_the_login_user_is_in_no_group_that_is_root(host, login):
    assert set(host.check_output(f"id -Gn {login}").split()) & ROOT_GROUPS == set()


def test_the_login_user_has_no_password(host, login):
    assert host.check_output(f"getent shadow {login} | cut -d: -f2") in ("!", "*", "!*", "!!")


@pytest.mark.parametrize("path", SECRETS)
def test_the_login_user_cannot_read_a_secret(host, login, path):
    if not host.file(path).exists:
        pytest.skip(f"{path} is not on this host")
    assert host.run(f"sudo -u {login} test -r {path}").rc != 0


def test_the_login_user_cannot_use_the_docker_engine(host, login):
    if not host.file("/var/run/docker.sock").exists:
        pytest.skip("no Docker engine on this host")
    assert host.run(f"sudo -u {login} docker info").rc != 0


def test_the_login_users_home_holds_only_its_authorized_key(host, login):
    home = host.user(login).home
    files = set(host.check_output(f"find {home} -type f -printf '%P\\n'").split())
    # The shell's own start files are Debian's skeleton (/etc/skel); anything else is something it was given.
    assert files - {".bashrc", ".profile", ".bash_logout", ".sudo_as_admin_successful"} == {".ssh/authorized_keys"}
