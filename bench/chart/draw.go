package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// addLine adds a line with points; dashed for the second of a pair.
func addLine(p *plot.Plot, name string, xys plotter.XYs, i int, dashed bool) error {
	if len(xys) == 0 {
		return nil
	}
	l, s, err := plotter.NewLinePoints(xys)
	if err != nil {
		return err
	}
	col := plotutil.Color(i / 2 * 2)
	if strings.Contains(name, "raw") {
		col = plotutil.Color(i)
	}
	l.Color, s.Color = col, col
	s.Shape = plotutil.Shape(i)
	if dashed {
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	}
	p.Add(l, s)
	p.Legend.Add(name, l, s)
	return nil
}

// addPoints adds a scatter of points.
func addPoints(p *plot.Plot, name string, xys plotter.XYs, i int) error {
	s, err := plotter.NewScatter(xys)
	if err != nil {
		return err
	}
	s.Color = plotutil.Color(i)
	s.Shape = plotutil.Shape(i)
	s.Radius = vg.Points(3.5)
	p.Add(s)
	p.Legend.Add(name, s)
	return nil
}

// save writes p as an SVG.
func save(p *plot.Plot, dir, file string) error {
	c := vgsvg.New(width, height)
	p.Draw(padded(c))
	return writeSVG(c, dir, file)
}

// saveRow writes plots side by side as one SVG.
func saveRow(dir, file string, plots ...*plot.Plot) error {
	c := vgsvg.New(width*9/8, height)
	t := draw.Tiles{Rows: 1, Cols: len(plots), PadX: vg.Millimeter * 4}
	canvases := plot.Align([][]*plot.Plot{plots}, t, padded(c))
	for i, p := range plots {
		p.Draw(canvases[0][i])
	}
	return writeSVG(c, dir, file)
}

// padded leaves room at the right and the top, where gonum draws the last
// tick label and the title to the very edge.
func padded(c *vgsvg.Canvas) draw.Canvas {
	return draw.Crop(draw.New(c), 0, -vg.Points(12), 0, -vg.Points(4))
}

// writeSVG writes c to dir/file. The text is laid out with Liberation Sans's
// metrics, which Arial and Helvetica share; the SVG names those as fallbacks
// (it names Liberation Sans alone), so a viewer without Liberation draws the
// text the width it was laid out for instead of in its default serif font.
func writeSVG(c *vgsvg.Canvas, dir, file string) error {
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		return err
	}
	s := strings.ReplaceAll(buf.String(), "font-family:Liberation Sans;",
		"font-family:'Liberation Sans',Arial,Helvetica,sans-serif;")
	return os.WriteFile(filepath.Join(dir, file), []byte(s), 0o644)
}

// useSans makes Liberation Sans the font of every chart.
func useSans() {
	plot.DefaultFont = font.Font{Typeface: "Liberation", Variant: "Sans"}
	plotter.DefaultFont = plot.DefaultFont
}

func upper(s string) string { return strings.ToUpper(s) }

func init() { useSans() }

// plainTicks labels ticks as numbers without trailing zeros (25, not 25.00).
type plainTicks struct{ plot.Ticker }

func (t plainTicks) Ticks(min, max float64) []plot.Tick {
	inner := t.Ticker
	if inner == nil {
		inner = plot.DefaultTicks{}
	}
	ticks := inner.Ticks(min, max)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = strconv.FormatFloat(ticks[i].Value, 'g', -1, 64)
		}
	}
	return ticks
}
