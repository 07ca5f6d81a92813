package hmapdecode

// Heat-map geometry: at most maxCells cells, occCols per row.
const (
	maxCells = 1024
	occCols  = 64
)

// occupancyBuilder downsamples per-unit live counts into at most maxCells
// cells, so the matrix stays small for a map of any size.
type occupancyBuilder struct {
	units int
	span  int
	sum   []float64
	n     []int32
}

func (o *occupancyBuilder) init(units int) {
	if units <= 0 {
		return
	}
	o.units = units
	o.span = (units + maxCells - 1) / maxCells
	cells := (units + o.span - 1) / o.span
	o.sum = make([]float64, cells)
	o.n = make([]int32, cells)
}

func (o *occupancyBuilder) add(unit, live int) {
	if o.span == 0 || unit < 0 || unit >= o.units {
		return
	}
	c := unit / o.span
	o.sum[c] += float64(live)
	o.n[c]++
}

func (o *occupancyBuilder) result() Occupancy {
	out := Occupancy{Units: o.units, Span: o.span, Cells: []float64{}}
	if o.span == 0 {
		return out
	}
	out.Cells = make([]float64, len(o.sum))
	for i := range o.sum {
		if o.n[i] > 0 {
			out.Cells[i] = o.sum[i] / float64(o.n[i])
		}
	}
	out.Cols = occCols
	if len(out.Cells) < occCols {
		out.Cols = len(out.Cells)
	}
	out.Rows = (len(out.Cells) + out.Cols - 1) / out.Cols
	return out
}

// fork returns an empty builder with o's geometry.
func (o *occupancyBuilder) fork() occupancyBuilder {
	return occupancyBuilder{units: o.units, span: o.span, sum: make([]float64, len(o.sum)), n: make([]int32, len(o.n))}
}

// merge adds f's cells (same geometry) to o's.
func (o *occupancyBuilder) merge(f *occupancyBuilder) {
	for i := range f.sum {
		if i < len(o.sum) {
			o.sum[i] += f.sum[i]
			o.n[i] += f.n[i]
		}
	}
}
