# Two commands for a newcomer: `make demo` and `make test`.
# System packages come from apt (installed when run as root, else the exact line is printed);
# Python packages go into .venv.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
APT_PACKAGES := openssh-server openssh-client util-linux login passwd busybox dash wget curl xvfb x11vnc xterm tigervnc-standalone-server xauth qemu-system-x86 cpio openssl
NEEDED_TOOLS := sshd ssh-keygen agetty login useradd busybox dash wget curl Xvfb x11vnc xterm Xtigervnc qemu-system-x86_64 cpio openssl

.PHONY: demo test lint system-deps venv clean test-clouds test-vm

demo: system-deps venv
	$(BIN)/recovery demo

test: system-deps venv lint test-clouds test-vm
	$(BIN)/python -m pytest

# The test cloud's real services live in virtualenvs of their own (their pins clash with ours).
test-clouds:
	bash tests/cloud/ensure_swift_venv.sh
	bash tests/cloud/ensure_nova_venv.sh
	bash tests/cloud/ensure_keystone.sh

# The QEMU test VM's kernel and static busybox, unpacked from Debian packages (not installed).
test-vm:
	bash tests/qemu/ensure_vm_parts.sh

lint: venv
	$(BIN)/ruff check recovery tests benchmarks
	$(BIN)/mypy

system-deps:
	@missing=""; for tool in $(NEEDED_TOOLS); do \
	  command -v $$tool >/dev/null 2>&1 || [ -x /usr/sbin/$$tool ] || missing="$$missing $$tool"; done; \
	dpkg-query -W -f='$${Status}' busybox 2>/dev/null | grep -q 'ok installed' || missing="$$missing busybox(not-static)"; \
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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
