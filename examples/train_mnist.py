"""Train the paper's MNIST network with integers only, save it, reload it, predict.

python examples/train_mnist.py [epochs]
"""

import sys

import pocketnn
from pocketnn.datasets import load_dataset

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
data = load_dataset("mnist")  # fetched, verified by sha256 and cached on first use

model = pocketnn.build_mlp([784, 100, 50, 10], activation="pocket_tanh")
trainer = pocketnn.Trainer(model, algorithm="dfa", lr_inv=1000, batch_size=20, seed=1)
for result in trainer.fit(
    data.train_images, data.train_labels, epochs, data.test_images, data.test_labels
):
    print(f"epoch {result.epoch}: {result.test_correct}/{result.test_total} test images right")

pocketnn.save("mnist.npz", model)
same = pocketnn.load("mnist.npz")
print("first five test predictions:", same.predict(data.test_images[:5]).tolist())
print("their labels:               ", data.test_labels[:5].tolist())
