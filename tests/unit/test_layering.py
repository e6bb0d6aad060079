import pkgutil
import subprocess
import sys

import noa


def test_the_cores_never_import_ray() -> None:
    modules = [m.name for m in pkgutil.walk_packages(noa.__path__, "noa.")]
    assert "noa.router" in modules and "noa.http.app" in modules
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + ("print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
