# Two commands for a newcomer: `make demo` and `make test`.
# System packages come from apt (installed when run as root, else the exact line is printed);
# Python packages go into .venv.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FLOORS_VENV ?= .cache/floors-venv
FLOORS_BIN := $(FLOORS_VENV)/bin
APT_PACKAGES := openssh-server openssh-client util-linux login passwd busybox dash wget curl xvfb x11vnc xterm tigervnc-standalone-server xauth qemu-system-x86 cpio openssl debootstrap qemu-utils console-data console-setup-linux xfonts-base fish grub-pc-bin grub-common xorriso mtools
NEEDED_TOOLS := sshd ssh-keygen agetty login useradd busybox dash wget curl Xvfb x11vnc xterm Xtigervnc qemu-system-x86_64 cpio openssl debootstrap qemu-img fish grub-mkrescue xorriso

.PHONY: demo test lint system-deps venv clean test-clouds test-vm test-agent-vm test-floors

demo: system-deps venv
	$(BIN)/recovery demo

# Three pytest-xdist workers: most tests wait on servers and consoles, not on the CPU. A test module
# stays on one worker, and the QEMU VMs all share one (tests/conftest.py).
test: system-deps venv lint test-clouds test-vm test-agent-vm test-floors
	$(BIN)/python -m pytest -n 3 --dist loadgroup

# The dependency floors pyproject.toml promises, proven: a venv of its own with every direct
# dependency at exactly its floor (constraints generated from pyproject.toml), then the unit
# tests, a real audit login (ssh2-python) and one real recovery through the lab (`recovery demo`).
# pytest and the rest of the test extra install unpinned: they are not floors we promise.
test-floors: system-deps $(FLOORS_VENV)/.installed
	$(FLOORS_BIN)/python tests/floors/constraints.py --check
	$(FLOORS_BIN)/python -m pytest -q -n 2 --dist loadgroup tests/unit tests/integration/test_audit_engine.py tests/e2e/test_demo.py

$(FLOORS_VENV)/.installed: pyproject.toml tests/floors/constraints.py
	rm -rf $(FLOORS_VENV)
	$(PYTHON) -m venv $(FLOORS_VENV)
	$(PYTHON) tests/floors/constraints.py > $(FLOORS_VENV)/constraints.txt
	$(FLOORS_BIN)/pip install -q -c $(FLOORS_VENV)/constraints.txt -e '.[lab,s3,test]'
	touch $@

# The test cloud's real services live in virtualenvs of their own (their pins clash with ours).
test-clouds:
	bash tests/cloud/ensure_swift_venv.sh
	bash tests/cloud/ensure_nova_venv.sh
	bash tests/cloud/ensure_keystone.sh

# The QEMU test VM's kernel and static busybox, unpacked from Debian packages (not installed).
test-vm:
	bash tests/qemu/ensure_vm_parts.sh

# The guest-agent test VM (Debian 12, systemd, sshd, qemu-guest-agent), built once into .cache/agent-vm
# from the apt mirror this machine uses (~90 s; debootstrap and qemu-img from apt).
test-agent-vm: system-deps
	bash tests/agentvm/build_image.sh
	$(BIN)/python -c 'from tests.agentvm.grub import ensure_grub_iso; ensure_grub_iso(); ensure_grub_iso("vnc")'

lint: venv
	$(BIN)/ruff check recovery tests benchmarks
	$(BIN)/mypy

system-deps:
	@missing=""; for tool in $(NEEDED_TOOLS); do \
	  command -v $$tool >/dev/null 2>&1 || [ -x /usr/sbin/$$tool ] || missing="$$missing $$tool"; done; \
	dpkg-query -W -f='$${Status}' busybox 2>/dev/null | grep -q 'ok installed' || missing="$$missing busybox(not-static)"; \
	for font in consolefonts/iso01a-8x16.psf.gz consolefonts/Lat15-Fixed16.psf.gz fonts/X11/misc/6x13-ISO8859-1.pcf.gz; do \
	  [ -e /usr/share/$$font ] || missing="$$missing $$font(the VNC screen reader's fonts)"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing system packages for:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	  else \
	    echo "missing:$$missing. Run as root:"; \
	    echo "  apt-get install -y --no-install-recommends $(APT_PACKAGES)"; \
	    exit 1; \
	  fi; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[lab,test,s3]'
	touch $@

clean:
	rm -rf $(VENV) $(FLOORS_VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
