"""transseg_preprocess (not implemented yet)."""
from .common import not_implemented

main = not_implemented("transseg_preprocess", "Preprocessing")

if __name__ == "__main__":
    raise SystemExit(main())
