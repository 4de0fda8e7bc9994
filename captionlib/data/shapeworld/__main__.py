"""`python -m captionlib.data.shapeworld [--seed N]`: generate ShapeWorld, print its folder."""

from captionlib.data.shapeworld.write import main

if __name__ == "__main__":
    main()
