# Sourced by generate and test: the pinned Python toolchain in $root/.tools/py.
# Reinstalls only when requirements-dev.txt changes (a stamp file holds its hash).
py_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
py_dir="$py_root/clients/python"
venv="$py_root/.tools/py"
req="$py_dir/scripts/requirements-dev.txt"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [[ ! -x $venv/bin/python || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  python=${PYTHON:-python3}
  echo "python: installing pinned tools into .tools/py ($("$python" --version))"
  "$python" -m venv --clear "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  echo "$want" >"$stamp"
fi
export PATH="$venv/bin:$PATH"
# Before 0.2.0 the distribution was called `agentry`; drop an old install of it.
if compgen -G "$venv/lib/python*/site-packages/agentry-*.dist-info" >/dev/null; then
  "$venv/bin/pip" uninstall --quiet --yes agentry
fi
