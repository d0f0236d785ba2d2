"""The plain-Python distribution of panoptic_perception (pip). ROS builds use CMakeLists.txt."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "panoptic_perception"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Camera-based driving perception with swappable deep-learning backends, for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["weights/*.pth"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/config", glob("config/*")),
        (f"share/{PACKAGE}/launch", glob("launch/*")),
    ],
    # The node needs torch, numpy, OpenCV and PyYAML (and ONNX Runtime for runtime onnxruntime); evaluation adds
    # pycocotools and matplotlib, bag tools rosbags.
    install_requires=[
        "torch>=2.1",
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "pycocotools>=2.0.8",
        "PyYAML>=6",
        "matplotlib>=3.7",
        "rosbags>=0.10",
        "tqdm>=4.60",
        # Deployment: ONNX export (torch.onnx's exporter needs onnxscript) and ONNX Runtime.
        "onnx>=1.17",
        "onnxruntime>=1.20",
        "onnxscript>=0.5",
    ],
    # tensorrt: the TensorRT runtime, for a machine with an NVIDIA GPU (pip install -e .[tensorrt];
    # scripts/gpu-check.sh only checks that it is there).
    extras_require={"test": ["cityscapesscripts>=2.2", "pytest>=7"], "tensorrt": ["tensorrt>=10"]},
    entry_points={"console_scripts": [f"panoptic-perception = {PACKAGE}.cli:main"]},
)
