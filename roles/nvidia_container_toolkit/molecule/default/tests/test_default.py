"""Facts about a host without a GPU converged by the nvidia_container_toolkit role (force_install_repo)."""

import pytest

KEY = "/usr/share/keyrings/nvidia-container-toolkit-keyring.asc"
SOURCES = "/etc/apt/sources.list.d/nvidia-container-toolkit.list"


@pytest.mark.parametrize("package", ["pciutils"])
def test_package_is_installed(host, package):
    assert host.package(package).is_installed


@pytest.mark.parametrize("package", ["nvidia-container-toolkit"])
def test_gpu_package_is_not_installed_without_a_gpu(host, package):
    assert not host.package(package).is_installed


def test_lspci_finds_no_nvidia_gpu(host):
    assert host.check_output("lspci -n -mm -d 10de:") == ""


@pytest.mark.parametrize("path", [KEY, SOURCES])
def test_repository_file_exists(host, path):
    assert host.file(path).is_file


@pytest.mark.parametrize("path", [KEY, SOURCES])
def test_repository_file_mode(host, path):
    assert host.file(path).mode == 0o644


def test_key_is_an_armored_public_key(host):
    assert host.file(KEY).content_string.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")


@pytest.mark.parametrize(
    "fragment",
    [
        f"[signed-by={KEY}]",
        "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /",
    ],
)
def test_sources_list_has(host, fragment):
    assert fragment in host.file(SOURCES).content_string


@pytest.mark.parametrize("package", ["docker.io"])
def test_docker_is_left_alone_without_a_gpu(host, package):
    assert not host.package(package).is_installed
