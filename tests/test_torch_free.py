import subprocess
import sys


def test_preprocessing_and_drawing_import_without_torch():
    # The edge runtime shares these modules; they must work where torch is not installed.
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
        "import numpy as np\n"
        "from detector.config import preset\n"
        "from detector.preprocess import preprocess_batch\n"
        "from detector.draw import draw_detections\n"
        "c = preset('yolov4-nano')\n"
        "x, t = preprocess_batch([np.zeros((10, 20, 3), np.uint8)], c.input_size, c.preprocess)\n"
        "assert x.shape == (1, 3, 416, 416), x.shape\n"
        "draw_detections(np.zeros((10, 20, 3), np.uint8), [[1, 1, 5, 5]], [0.9], [0], ['a'])\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
