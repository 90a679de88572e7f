"""The demos' summary pictures: tiles upscaled to a readable size, labels in a scalable font on a
solid backing, a legend of classes and colours, and a title that says what is shown.

Plain PIL and numpy; the demo tools (``tools/demo/*.py``) put the pieces together.
"""
import math
import os
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MIN_SIDE = 256  # every tile's short side is at least this many pixels
# distinct, colour-blind-friendly colours (Okabe-Ito, then Tableau), one per class
PALETTE = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
           (213, 94, 0), (204, 121, 167), (148, 103, 189), (140, 86, 75), (127, 127, 127)]
WRONG = (220, 20, 60)
RIGHT = (0, 140, 70)
Color = Tuple[int, int, int]


def font(size: int = 16) -> ImageFont.ImageFont:
    """A scalable font (PIL's bundled one, through FreeType); PIL's bitmap font where FreeType
    is missing."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # PIL < 10.1 or no FreeType
        return ImageFont.load_default()


def class_colors(num: int, palette: Optional[Sequence[Sequence[int]]] = None) -> List[Color]:
    """One colour per class: the dataset's palette when it has one, else :data:`PALETTE`."""
    source = [tuple(int(v) for v in c) for c in palette] if palette else PALETTE
    return [source[i % len(source)] for i in range(num)]


def upscale(image: Image.Image, min_side: int = MIN_SIDE,
            resample=Image.Resampling.NEAREST) -> Tuple[Image.Image, int]:
    """Enlarge by the smallest integer factor that makes the short side >= ``min_side`` (an
    integer factor keeps label maps' pixels square); returns the image and the factor."""
    factor = max(1, math.ceil(min_side / min(image.size)))
    if factor == 1:
        return image, 1
    return image.resize((image.width * factor, image.height * factor), resample), factor


def text_color(background: Color) -> Color:
    """Black or white, whichever reads better on ``background``."""
    luminance = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def label(draw: ImageDraw.ImageDraw, xy: Tuple[float, float], text: str, background: Color,
          text_font: ImageFont.ImageFont, inside: Optional[Tuple[int, int]] = None) -> None:
    """``text`` on a solid box whose top-left corner is ``xy``, moved to stay inside an image of
    size ``inside`` (width, height) when given."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=text_font)
    width, height = right - left + 6, bottom - top + 4
    x, y = xy
    if inside is not None:
        x = min(max(x, 0), inside[0] - width)
        y = min(max(y, 0), inside[1] - height)
    draw.rectangle([x, y, x + width, y + height], fill=background)
    draw.text((x + 3 - left, y + 2 - top), text, fill=text_color(background), font=text_font)


def draw_boxes(image: Image.Image, boxes: np.ndarray, labels: Sequence[int],
               scores: Sequence[float], classes: Sequence[str], colors: Sequence[Color],
               scale: float = 1.0, text_font: Optional[ImageFont.ImageFont] = None) -> Image.Image:
    """Boxes (x1, y1, x2, y2 in the original image's pixels) with ``class score`` labels drawn
    on a copy of ``image`` (already upscaled by ``scale``)."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    text_font = text_font or font(15)
    width = max(2, round(scale))
    for box, cls, score in zip(boxes, labels, scores):
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=colors[cls], width=width)
    # labels after all boxes, so that no box line crosses a label
    for box, cls, score in zip(boxes, labels, scores):
        x1, y1 = float(box[0]) * scale, float(box[1]) * scale
        height = draw.textbbox((0, 0), 'Ag', font=text_font)[3] + 4
        label(draw, (x1, y1 - height), f'{classes[cls]} {score:.2f}', colors[cls], text_font,
              inside=image.size)
    return image


def frame(image: Image.Image, color: Color, width: int = 6) -> Image.Image:
    image = image.copy()
    ImageDraw.Draw(image).rectangle([0, 0, image.width - 1, image.height - 1], outline=color,
                                    width=width)
    return image


def caption(image: Image.Image, lines: Sequence[Tuple[str, Color]],
            text_font: Optional[ImageFont.ImageFont] = None) -> Image.Image:
    """``image`` with text lines (text, colour) on white below it."""
    text_font = text_font or font(16)
    probe = ImageDraw.Draw(image)
    line_height = probe.textbbox((0, 0), 'Ag', font=text_font)[3] + 4
    out = Image.new('RGB', (image.width, image.height + line_height * len(lines) + 4), 'white')
    out.paste(image, (0, 0))
    draw = ImageDraw.Draw(out)
    for i, (text, color) in enumerate(lines):
        draw.text((4, image.height + 2 + i * line_height), text, fill=color, font=text_font)
    return out


def side_by_side(images: Sequence[Image.Image], gap: int = 4) -> Image.Image:
    height = max(i.height for i in images)
    out = Image.new('RGB', (sum(i.width for i in images) + gap * (len(images) - 1), height),
                    'white')
    x = 0
    for image in images:
        out.paste(image, (x, 0))
        x += image.width + gap
    return out


def grid(tiles: Sequence[Image.Image], columns: int = 4, gap: int = 8) -> Image.Image:
    """Tiles in rows of ``columns``, each cell as large as the largest tile."""
    columns = max(1, min(columns, len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    cell_w, cell_h = max(t.width for t in tiles), max(t.height for t in tiles)
    out = Image.new('RGB', (columns * cell_w + (columns - 1) * gap,
                            rows * cell_h + (rows - 1) * gap), 'white')
    for index, tile in enumerate(tiles):
        row, col = divmod(index, columns)
        out.paste(tile, (col * (cell_w + gap), row * (cell_h + gap)))
    return out


def legend(classes: Sequence[str], colors: Sequence[Color], width: int,
           text_font: Optional[ImageFont.ImageFont] = None) -> Image.Image:
    """Colour swatches with class names, wrapped to ``width`` pixels."""
    text_font = text_font or font(16)
    probe = ImageDraw.Draw(Image.new('RGB', (1, 1)))
    line_height = probe.textbbox((0, 0), 'Ag', font=text_font)[3] + 8
    swatch = line_height - 8
    entries = []
    for name, color in zip(classes, colors):
        entries.append((name, color, swatch + 6 + probe.textlength(name, font=text_font) + 24))
    rows, x = [[]], 0
    for entry in entries:
        if x + entry[2] > width and rows[-1]:
            rows.append([])
            x = 0
        rows[-1].append(entry)
        x += entry[2]
    out = Image.new('RGB', (width, line_height * len(rows) + 4), 'white')
    draw = ImageDraw.Draw(out)
    for r, row in enumerate(rows):
        x, y = 4, 4 + r * line_height
        for name, color, advance in row:
            draw.rectangle([x, y, x + swatch, y + swatch], fill=color, outline=(0, 0, 0))
            draw.text((x + swatch + 6, y - 1), name, fill=(0, 0, 0), font=text_font)
            x += advance
    return out


def compose(body: Image.Image, title: str, footer: Optional[Image.Image] = None,
            text_font: Optional[ImageFont.ImageFont] = None) -> Image.Image:
    """A title line above ``body`` and an optional footer (the legend) below it."""
    text_font = text_font or font(18)
    probe = ImageDraw.Draw(body)
    title_height = probe.textbbox((0, 0), 'Ag', font=text_font)[3] + 12
    footer_height = footer.height + 8 if footer is not None else 0
    out = Image.new('RGB', (body.width + 16, title_height + body.height + footer_height + 16),
                    'white')
    ImageDraw.Draw(out).text((8, 6), title, fill=(0, 0, 0), font=text_font)
    out.paste(body, (8, title_height))
    if footer is not None:
        out.paste(footer, (8, title_height + body.height + 8))
    return out


def save_picture(picture: Image.Image, out: str) -> None:
    """Write ``picture`` to ``out`` under a temporary name first, so that no half-written file
    is left, and say so."""
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    partial = out + '.partial.png'
    picture.save(partial)
    os.replace(partial, out)
    print(f'wrote {out} ({picture.width}x{picture.height})')
