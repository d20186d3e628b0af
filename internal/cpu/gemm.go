package cpu

import (
	"fmt"
	"runtime"
)

// The GEMM follows the BLIS/GotoBLAS plan: C is cut into nc-wide column
// panels and mBig-tall row panels, K into kc-deep slices; for each slice the
// operands are packed into contiguous micro-panels (mr rows of A, nr columns
// of B, interleaved along K) and a register-blocked mr×nr micro-kernel walks
// them. The sizes fit AMD Zen: an nr-wide B sliver (kc·nr·4 = 16 KiB) stays in
// L1, an mc×kc block of A (144 KiB) in L2, the kc×nc panel of B in L3.
const (
	gemmMR   = 6    // rows of a micro-tile: 6 broadcasts of A per step
	gemmNR   = 16   // columns of a micro-tile: two 8-wide YMM vectors of B
	gemmKC   = 256  // depth of one packed K slice
	gemmMC   = 144  // rows of A one task keeps in L2
	gemmNC   = 4080 // columns of B packed at once (a multiple of gemmNR)
	gemmMBig = 3456 // rows of A packed at once (a multiple of gemmMC), bounds the buffer
)

// gemmParallelFlops is the size (2·m·n·k) below which a GEMM runs on the
// calling goroutine: below ~50 µs of work, handing panels to goroutines costs
// about as much as it saves.
const gemmParallelFlops = 1 << 22

// sgemm computes the row-major product
//
//	c (m, n) = alpha·op(a)·op(b) + beta·c
//
// where op(a) is a (m, k) with leading dimension lda, or aᵀ when transA and a
// is stored (k, m); op(b) is b (k, n), or bᵀ when transB and b is stored
// (n, k). As in BLAS, beta = 0 writes c without reading it. Every element of c
// is reduced by one goroutine over K in a fixed order, so the result has the
// same bits for any GOMAXPROCS.
func sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, true)
}

// gemm is sgemm with a switch to keep all work on the calling goroutine, for
// callers that already run many small products in parallel.
func gemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int, parallel bool) {
	if m == 0 || n == 0 {
		return
	}
	checkGemmArgs(transA, transB, m, n, k, a, lda, b, ldb, c, ldc)
	if k == 0 || alpha == 0 {
		scaleRows(m, n, beta, c, ldc)
		return
	}
	g := gemmJob{
		m: m, n: n, k: k, alpha: alpha, beta: beta, c: c, ldc: ldc,
		packA: stridedPackA(transA, a, lda),
		packB: stridedPackB(transB, b, ldb),
	}
	g.run(parallel && 2*m*n*k >= gemmParallelFlops)
}

// checkGemmArgs panics with the offending operand when a slice is too short
// for its shape and leading dimension; the assembly kernel relies on it.
func checkGemmArgs(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	if transA {
		checkMatrix("a", k, m, lda, len(a))
	} else {
		checkMatrix("a", m, k, lda, len(a))
	}
	checkBC(transB, m, n, k, b, ldb, c, ldc)
}

// checkBC is checkGemmArgs for the operands b and c.
func checkBC(transB bool, m, n, k int, b []float32, ldb int, c []float32, ldc int) {
	if transB {
		checkMatrix("b", n, k, ldb, len(b))
	} else {
		checkMatrix("b", k, n, ldb, len(b))
	}
	checkMatrix("c", m, n, ldc, len(c))
}

// checkMatrix panics unless have values hold a (rows, cols) matrix with
// leading dimension ld.
func checkMatrix(name string, rows, cols, ld, have int) {
	if rows == 0 || cols == 0 {
		return
	}
	if ld < cols || have < (rows-1)*ld+cols {
		panic(fmt.Sprintf("cpu: sgemm: %s is %d values with leading dimension %d, want a (%d, %d) matrix", name, have, ld, rows, cols))
	}
}

// scaleRows sets c (m, n) = beta·c, and to zero when beta is 0.
func scaleRows(m, n int, beta float32, c []float32, ldc int) {
	for i := range m {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		for j := range row {
			row[j] *= beta
		}
	}
}

// A packAFunc writes rows [i0, i1) × depth [p0, p1) of the left operand into
// dst as mr-row micro-panels: panel s holds dst[s·mr·kb + p·mr + r] =
// A[i0 + s·mr + r, p0 + p], zero-padded past i1. A packBFunc writes depth
// [p0, p1) × columns [j0, j1) of the right operand as nr-column micro-panels,
// dst[s·nr·kb + p·nr + j] = B[p0 + p, j0 + s·nr + j], zero-padded past j1.
type (
	packAFunc func(dst []float32, i0, i1, p0, p1 int)
	packBFunc func(dst []float32, p0, p1, j0, j1 int)
)

// gemmJob is one product c = alpha·A·B + beta·c with B given by a packer and
// A by a packer or, when prepacked is set, already packed by packMatrixA.
type gemmJob struct {
	m, n, k     int
	alpha, beta float32
	c           []float32
	ldc         int
	packA       packAFunc
	prepacked   []float32
	packB       packBFunc
}

// packMatrixA packs all of op(a) (m, k), a as in sgemm, for products that
// reuse it: one block per K slice p0 (at offset p0·roundUp(m, mr)), each the
// mr-row micro-panels of rows [0, m) for that slice. Release it with
// putScratch.
func packMatrixA(trans bool, a []float32, lda, m, k int, parallel bool) *[]float32 {
	mPad := roundUp(m, gemmMR)
	buf := getScratch(mPad * k) // K/kc blocks of (mPad/mr, kb, mr)
	pack := stridedPackA(trans, a, lda)
	for p0 := 0; p0 < k; p0 += gemmKC {
		p1 := min(p0+gemmKC, k)
		kb := p1 - p0
		block := (*buf)[p0*mPad : p1*mPad]
		forRange(parallel, mPad/gemmMR, max(1, 16384/(gemmMR*kb)), func(lo, hi int) {
			pack(block[lo*gemmMR*kb:hi*gemmMR*kb], lo*gemmMR, min(hi*gemmMR, m), p0, p1)
		})
	}
	return buf
}

// gemmPacked is gemm with op(a) (m, k) packed by packMatrixA.
func gemmPacked(pa []float32, m, n, k int, alpha float32, transB bool, b []float32, ldb int, beta float32, c []float32, ldc int, parallel bool) {
	if m == 0 || n == 0 {
		return
	}
	if len(pa) < roundUp(m, gemmMR)*k {
		panic(fmt.Sprintf("cpu: sgemm: packed a is %d values, want (%d, %d) packed", len(pa), m, k))
	}
	checkBC(transB, m, n, k, b, ldb, c, ldc)
	if k == 0 || alpha == 0 {
		scaleRows(m, n, beta, c, ldc)
		return
	}
	g := gemmJob{
		m: m, n: n, k: k, alpha: alpha, beta: beta, c: c, ldc: ldc,
		prepacked: pa,
		packB:     stridedPackB(transB, b, ldb),
	}
	g.run(parallel && 2*m*n*k >= gemmParallelFlops)
}

// run computes the product, spreading packing and micro-tiles over
// goroutines when parallel. Blocking depends only on m, n and k, so the
// arithmetic done for each element is the same either way.
func (g *gemmJob) run(parallel bool) {
	kBig := min(g.k, gemmKC)
	var aBuf *[]float32
	if g.prepacked == nil {
		aBuf = getScratch(min(roundUp(g.m, gemmMR), gemmMBig) * kBig) // mBig/mr panels of (kc, mr)
		defer putScratch(aBuf)
	}
	bBuf := getScratch(kBig * min(roundUp(g.n, gemmNR), gemmNC)) // nc/nr panels of (kc, nr)
	defer putScratch(bBuf)
	for jc := 0; jc < g.n; jc += gemmNC {
		j1 := min(jc+gemmNC, g.n)
		for ic := 0; ic < g.m; ic += gemmMBig {
			i1 := min(ic+gemmMBig, g.m)
			for pc := 0; pc < g.k; pc += gemmKC {
				p1 := min(pc+gemmKC, g.k)
				var ap []float32
				if aBuf != nil {
					ap = *aBuf
				} else {
					mPad := roundUp(g.m, gemmMR)
					ap = g.prepacked[pc*mPad+ic*(p1-pc):]
				}
				g.step(ap, *bBuf, ic, i1, pc, p1, jc, j1, parallel)
			}
		}
	}
}

// step packs the blocks A[i0:i1, p0:p1] (unless ap holds them prepacked) and
// B[p0:p1, j0:j1] and runs the micro-kernel over C[i0:i1, j0:j1]. The first K
// slice applies beta; later ones add to what earlier slices left in C.
func (g *gemmJob) step(ap, bp []float32, i0, i1, p0, p1, j0, j1 int, parallel bool) {
	kb := p1 - p0
	aPanels := (i1 - i0 + gemmMR - 1) / gemmMR
	bPanels := (j1 - j0 + gemmNR - 1) / gemmNR
	ap = ap[:aPanels*gemmMR*kb]
	bp = bp[:bPanels*gemmNR*kb]
	beta, load := g.beta, g.beta != 0
	if p0 > 0 {
		beta, load = 1, true
	}
	// A and B are packed by one parallel loop over chunks of ~16K values:
	// first aChunks chunks of A panels, then chunks of B panels.
	aGrain, bGrain := max(1, 16384/(gemmMR*kb)), max(1, 16384/(gemmNR*kb))
	aChunks := (aPanels + aGrain - 1) / aGrain
	if g.prepacked != nil {
		aChunks = 0
	}
	bChunks := (bPanels + bGrain - 1) / bGrain
	forRange(parallel, aChunks+bChunks, 1, func(lo, hi int) {
		for t := lo; t < hi; t++ {
			if t < aChunks {
				s0, s1 := t*aGrain, min((t+1)*aGrain, aPanels)
				g.packA(ap[s0*gemmMR*kb:s1*gemmMR*kb], i0+s0*gemmMR, min(i0+s1*gemmMR, i1), p0, p1)
				continue
			}
			s0 := (t - aChunks) * bGrain
			s1 := min(s0+bGrain, bPanels)
			g.packB(bp[s0*gemmNR*kb:s1*gemmNR*kb], p0, p1, j0+s0*gemmNR, min(j0+s1*gemmNR, j1))
		}
	})
	// Tasks are mc-row blocks, split along the columns as well when there
	// are too few of them to keep every goroutine busy. The split decides only
	// who computes a micro-tile, never how, so it may follow GOMAXPROCS.
	rowBlocks := (i1 - i0 + gemmMC - 1) / gemmMC
	colSplit := 1
	if parallel {
		colSplit = min(bPanels, max(1, (4*runtime.GOMAXPROCS(0)+rowBlocks-1)/rowBlocks))
	}
	colPanels := (bPanels + colSplit - 1) / colSplit
	colBlocks := (bPanels + colPanels - 1) / colPanels
	forRange(parallel, rowBlocks*colBlocks, 1, func(lo, hi int) {
		var tile [gemmMR * gemmNR]float32 // edge tiles go through here
		for t := lo; t < hi; t++ {
			rb, cb := t/colBlocks, t%colBlocks
			ir0 := rb * gemmMC
			ir1 := min(ir0+gemmMC, i1-i0)
			jr0 := cb * colPanels * gemmNR
			jr1 := min(jr0+colPanels*gemmNR, j1-j0)
			for jr := jr0; jr < jr1; jr += gemmNR {
				nr := min(gemmNR, jr1-jr)
				bs := bp[jr*kb : (jr+gemmNR)*kb]
				for ir := ir0; ir < ir1; ir += gemmMR {
					mr := min(gemmMR, ir1-ir)
					as := ap[ir*kb : (ir+gemmMR)*kb]
					off := (i0+ir)*g.ldc + j0 + jr
					if mr == gemmMR && nr == gemmNR {
						microKernel(kb, as, bs, g.c[off:], g.ldc, g.alpha, beta, load)
						continue
					}
					if load {
						for r := range mr {
							copy(tile[r*gemmNR:r*gemmNR+nr], g.c[off+r*g.ldc:])
						}
					}
					microKernel(kb, as, bs, tile[:], gemmNR, g.alpha, beta, load)
					for r := range mr {
						copy(g.c[off+r*g.ldc:off+r*g.ldc+nr], tile[r*gemmNR:])
					}
				}
			}
		}
	})
}

// forRange is parallelFor when parallel, else a plain loop in one chunk.
func forRange(parallel bool, n, grain int, body func(lo, hi int)) {
	if parallel {
		parallelFor(n, grain, body)
	} else if n > 0 {
		body(0, n)
	}
}

func roundUp(x, m int) int { return (x + m - 1) / m * m }

// stridedPackA packs op(a) of a strided row-major matrix: a (m, k), or a
// stored (k, m) when trans.
func stridedPackA(trans bool, a []float32, lda int) packAFunc {
	return func(dst []float32, i0, i1, p0, p1 int) {
		kb := p1 - p0
		for s := 0; i0+s*gemmMR < i1; s++ {
			d := dst[s*gemmMR*kb : (s+1)*gemmMR*kb]
			r0 := i0 + s*gemmMR
			rows := min(gemmMR, i1-r0)
			switch {
			case trans && rows == gemmMR:
				for p := range kb {
					*(*[gemmMR]float32)(d[p*gemmMR:]) = [gemmMR]float32(a[(p0+p)*lda+r0:])
				}
			case trans:
				for p := range kb {
					dp := d[p*gemmMR : p*gemmMR+gemmMR]
					copy(dp, a[(p0+p)*lda+r0:(p0+p)*lda+r0+rows])
					clear(dp[rows:])
				}
			case rows == gemmMR:
				// Six rows read in step, each written with stride mr.
				off := r0*lda + p0
				s0, s1, s2 := a[off:][:kb], a[off+lda:][:kb], a[off+2*lda:][:kb]
				s3, s4, s5 := a[off+3*lda:][:kb], a[off+4*lda:][:kb], a[off+5*lda:][:kb]
				for p := range kb {
					*(*[gemmMR]float32)(d[p*gemmMR:]) = [gemmMR]float32{s0[p], s1[p], s2[p], s3[p], s4[p], s5[p]}
				}
			default:
				clear(d)
				for r := range rows {
					src := a[(r0+r)*lda+p0 : (r0+r)*lda+p1]
					for p, v := range src {
						d[p*gemmMR+r] = v
					}
				}
			}
		}
	}
}

// stridedPackB packs op(b) of a strided row-major matrix: b (k, n), or b
// stored (n, k) when trans.
func stridedPackB(trans bool, b []float32, ldb int) packBFunc {
	return func(dst []float32, p0, p1, j0, j1 int) {
		kb := p1 - p0
		for s := 0; j0+s*gemmNR < j1; s++ {
			d := dst[s*gemmNR*kb : (s+1)*gemmNR*kb]
			c0 := j0 + s*gemmNR
			cols := min(gemmNR, j1-c0)
			if !trans && cols == gemmNR {
				for p := range kb {
					*(*[gemmNR]float32)(d[p*gemmNR:]) = [gemmNR]float32(b[(p0+p)*ldb+c0:])
				}
				continue
			}
			if !trans {
				for p := range kb {
					dp := d[p*gemmNR : p*gemmNR+gemmNR]
					copy(dp, b[(p0+p)*ldb+c0:(p0+p)*ldb+c0+cols])
					clear(dp[cols:])
				}
				continue
			}
			if cols == gemmNR {
				// Four rows of b read in step fill four columns of the panel.
				for jb := 0; jb < gemmNR; jb += 4 {
					off := (c0+jb)*ldb + p0
					s0, s1 := b[off:][:kb], b[off+ldb:][:kb]
					s2, s3 := b[off+2*ldb:][:kb], b[off+3*ldb:][:kb]
					for p := range kb {
						*(*[4]float32)(d[p*gemmNR+jb:]) = [4]float32{s0[p], s1[p], s2[p], s3[p]}
					}
				}
				continue
			}
			clear(d)
			for j := range cols {
				src := b[(c0+j)*ldb+p0 : (c0+j)*ldb+p1]
				for p, v := range src {
					d[p*gemmNR+j] = v
				}
			}
		}
	}
}

// microKernelGo is the portable micro-kernel: over kb steps of the packed
// panels a (kb, mr) and b (kb, nr) it accumulates the mr×nr tile, then writes
// c = alpha·acc + beta·c, or c = alpha·acc without reading c when !load.
func microKernelGo(kb int, a, b, c []float32, ldc int, alpha, beta float32, load bool) {
	var acc [gemmMR][gemmNR]float32
	a = a[:kb*gemmMR]
	b = b[:kb*gemmNR]
	for p := range kb {
		ap := a[p*gemmMR : p*gemmMR+gemmMR]
		bp := b[p*gemmNR : p*gemmNR+gemmNR]
		for r := range gemmMR {
			ar := ap[r]
			row := &acc[r]
			for j := range gemmNR {
				row[j] += ar * bp[j]
			}
		}
	}
	for r := range gemmMR {
		cr := c[r*ldc : r*ldc+gemmNR]
		for j := range gemmNR {
			if load {
				cr[j] = alpha*acc[r][j] + beta*cr[j]
			} else {
				cr[j] = alpha * acc[r][j]
			}
		}
	}
}
