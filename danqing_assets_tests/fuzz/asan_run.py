"""`make fuzz-asan`: run pytest with `danqing_assets._html` loaded from a sanitizer build (path in argv[1]) instead of
the installed one. Usage: python -m danqing_assets_tests.fuzz.asan_run BUILT.so [pytest args...]"""

import importlib.util
import sys

import pytest


def main() -> int:
    path, args = sys.argv[1], sys.argv[2:]
    spec = importlib.util.spec_from_file_location("danqing_assets._html", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["danqing_assets._html"] = module
    import danqing_assets
    from danqing_assets.lib import html as H

    danqing_assets._html = module
    assert H._compiled_scan() is not None and H._compiled_scan().__module__ == module.__name__
    print(f"C tokenizer: the sanitizer build {path}", flush=True)
    return pytest.main(args)


if __name__ == "__main__":
    sys.exit(main())
