"""Image demo: full VAR vs CoDe (two drafting depths) vs ScaleKV (two budgets), one PNG grid.

    python demos/image_demo.py --out grid.png          # CPU, well under a minute

Same as `paradecode image --out grid.png`; every option of that command works here too.
"""

import sys

from paradecode.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["image", *sys.argv[1:]]))
