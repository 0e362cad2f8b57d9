#!/bin/sh
# The Python environment of both images, in /opt/venv (run by images/*/Dockerfile at build time):
#   install.sh venv PYTHON   a venv from the base's Python
#   install.sh torch cpu|cuda  torch at images/torch.txt's version: cuda = PyPI's CUDA build with its
#                            nvidia-* wheels; cpu = the CPU build, from a wheel in the build context
#                            (build/docker/wheels, where `make images` puts this machine's) or PyTorch's CPU index
#   install.sh lock          requirements.lock exactly (--require-hashes, --no-deps)
#   install.sh project [EXTRA]  slmforge itself from /opt/slmforge, editable (repo_root() is /opt/slmforge,
#                            where tiny:// models find examples/), built with the lock's setuptools (no
#                            build isolation: nothing unlocked is fetched), then `pip check`: the lock
#                            meets every requirement
# A CA bundle passed as the build secret `ca_bundle` (a corporate proxy's CA) is used for the downloads
# of that step only; it is never written into a layer.
set -eu
if [ -f /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
case "$1" in
  venv) "$2" -m venv /opt/venv ;;
  torch)
    case "$2" in cpu|cuda) ;; *) echo "install.sh torch: $2 is not a torch build; use cpu or cuda" >&2; exit 2 ;; esac
    torch=$(sed -n 's/^torch==//p' /tmp/torch.txt)
    case "$2" in
      cuda) /opt/venv/bin/pip install -c /tmp/torch.txt "torch==$torch" ;;
      cpu)
        if ls /tmp/wheels/torch-"$torch"+cpu-*.whl >/dev/null 2>&1; then
          /opt/venv/bin/pip install --no-deps --no-index --find-links /tmp/wheels "torch==$torch+cpu"
        else
          /opt/venv/bin/pip install --no-deps --index-url https://download.pytorch.org/whl/cpu "torch==$torch"
        fi ;;
    esac ;;
  lock) /opt/venv/bin/pip install --no-deps --require-hashes -r /tmp/requirements.lock ;;
  project)
    /opt/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation -e "/opt/slmforge${2:+[$2]}"
    /opt/venv/bin/pip check ;;
  *) echo "install.sh: unknown step $1 (venv, torch, lock, project)" >&2; exit 2 ;;
esac
