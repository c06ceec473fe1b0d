"""digits_seg's construction: labels follow the topmost bright digit, background elsewhere."""
import torch

from uda.data.digits_seg import BACKGROUND, compose


def test_digits_seg_labels_follow_the_topmost_bright_digit_and_background_elsewhere():
    digits = torch.zeros(2, 28, 28, dtype=torch.uint8)
    digits[0, 4:20, 4:20] = 200  # "digit" of class 3: a bright square
    digits[1, 10:26, 10:26] = 250  # class 7, brighter
    digits[1, 0:2, 0:2] = 100  # faint pixels are background
    canvas, target = compose(digits.numpy(), torch.tensor([3, 7]).numpy(), 50, seed=0)
    assert canvas.shape == target.shape == (50, 64, 64)
    classes = set(target.flatten().tolist())
    assert classes <= {3, 7, BACKGROUND} and BACKGROUND in classes
    c, t = torch.from_numpy(canvas), torch.from_numpy(target)
    assert torch.all(c[t == BACKGROUND] < 128)  # background pixels are dark or faint
    assert torch.all(c[t == 3] == 200) and torch.all(c[t == 7] == 250)  # where 7 overlaps 3, 7 (brighter) wins
    assert (t != BACKGROUND).any(dim=(1, 2)).all()  # every canvas has at least one digit
