"""transseg_evaluate (not implemented yet)."""
from .common import not_implemented

main = not_implemented("transseg_evaluate", "Evaluation")

if __name__ == "__main__":
    raise SystemExit(main())
