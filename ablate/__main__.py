"""`python -m ablate ...` runs the same app as the `ablate` console script."""
from ablate.cli import main

if __name__ == "__main__":
    main()
