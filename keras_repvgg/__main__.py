import sys

from keras_repvgg.front.cli import main

sys.exit(main())
