"""transseg_train (not implemented yet)."""
from .common import not_implemented

main = not_implemented("transseg_train", "Training")

if __name__ == "__main__":
    raise SystemExit(main())
