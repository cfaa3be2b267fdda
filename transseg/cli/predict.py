"""transseg_predict (not implemented yet)."""
from .common import not_implemented

main = not_implemented("transseg_predict", "Prediction")

if __name__ == "__main__":
    raise SystemExit(main())
