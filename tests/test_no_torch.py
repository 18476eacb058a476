import subprocess
import sys


def test_import_lucid_does_not_import_torch() -> None:
    code = "import sys, lucid, lucid.nn, lucid.optim; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
