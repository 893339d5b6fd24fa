# Sourced, not run: creates (or reuses) the project's virtual environment outside the
# repository and activates it.  The environment is keyed on a hash of the dependency
# spec (setup.cfg + the pins below), so a change of dependencies gives a fresh one and
# an unchanged spec reuses the last one in seconds.
#
#   source scripts/env.sh            # core + test + viz extras
#   AUDIOSSL_VENV=/path source ...   # use an environment of your own choosing
#   AUDIOSSL_EXTRAS=test,viz,interop AUDIOSSL_NODEPS="pkg==v ..." source scripts/env.sh
#                                    # other extras (own venv), plus packages installed with
#                                    # --no-deps after them (scripts/test.sh --interop)
#   AUDIOSSL_VENV_IF_READY=1 source ...  # returns 3 instead of building a missing environment
#
# torch 2.14.1 + torchaudio 2.11.0 is the pair CI and the README run on; setup.cfg keeps
# loose ranges for users who bring their own torch.
_audiossl_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_audiossl_pins="torch==2.14.1 torchaudio==2.11.0"
_audiossl_extras="${AUDIOSSL_EXTRAS:-test,viz}"
_audiossl_nodeps="${AUDIOSSL_NODEPS:-}"
_audiossl_spec="$_audiossl_pins $_audiossl_extras${_audiossl_nodeps:+ --no-deps $_audiossl_nodeps}"
_audiossl_key="$( (cat "$_audiossl_root/setup.cfg"; echo "$_audiossl_spec") | sha256sum | cut -c1-12)"
_audiossl_py="${PYTHON:-python3}"
: "${AUDIOSSL_VENV:=${XDG_CACHE_HOME:-$HOME/.cache}/audiossl/venv-$_audiossl_key}"

_audiossl_log="${AUDIOSSL_VENV}.log"
if [ ! -f "$AUDIOSSL_VENV/.complete" ] && [ -n "${AUDIOSSL_VENV_IF_READY:-}" ]; then
    # Asked to use the environment only if it is already built (scripts/test.sh --interop-if-ready).
    unset _audiossl_log _audiossl_root _audiossl_pins _audiossl_extras _audiossl_nodeps _audiossl_spec _audiossl_key _audiossl_py
    return 3
elif [ ! -f "$AUDIOSSL_VENV/.complete" ]; then
    echo "[audiossl] creating virtual environment $AUDIOSSL_VENV (log: $_audiossl_log)" >&2
    rm -rf "$AUDIOSSL_VENV"
    mkdir -p "$(dirname "$AUDIOSSL_VENV")"
    if "$_audiossl_py" -m venv "$AUDIOSSL_VENV" > "$_audiossl_log" 2>&1 \
        && "$AUDIOSSL_VENV/bin/python" -m pip install --upgrade pip >> "$_audiossl_log" 2>&1 \
        && "$AUDIOSSL_VENV/bin/python" -m pip install $_audiossl_pins >> "$_audiossl_log" 2>&1 \
        && "$AUDIOSSL_VENV/bin/python" -m pip install -e "$_audiossl_root[$_audiossl_extras]" $_audiossl_pins >> "$_audiossl_log" 2>&1 \
        && { [ -z "$_audiossl_nodeps" ] || "$AUDIOSSL_VENV/bin/python" -m pip install --no-deps $_audiossl_nodeps >> "$_audiossl_log" 2>&1; }; then
        touch "$AUDIOSSL_VENV/.complete"
    else
        tail -n 30 "$_audiossl_log" >&2
        echo "[audiossl] environment set-up failed; full log in $_audiossl_log" >&2
        false
    fi
elif [ "$("$AUDIOSSL_VENV/bin/python" -c 'import audiossl, os; print(os.path.dirname(os.path.dirname(os.path.realpath(audiossl.__file__))))' 2>/dev/null)" != "$_audiossl_root" ]; then
    # The venv is shared by checkouts with the same spec: point the editable install here.
    "$AUDIOSSL_VENV/bin/python" -m pip install --no-deps -e "$_audiossl_root" >> "$_audiossl_log" 2>&1 \
        || { tail -n 30 "$_audiossl_log" >&2; false; }
fi
# shellcheck disable=SC1091
source "$AUDIOSSL_VENV/bin/activate"
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::UserWarning:torch._subclasses.functional_tensor}"
unset _audiossl_log _audiossl_root _audiossl_pins _audiossl_extras _audiossl_nodeps _audiossl_spec _audiossl_key _audiossl_py
