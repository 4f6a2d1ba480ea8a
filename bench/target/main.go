// bench target: G goroutines call Lookup in a loop; every 250 ms it prints the number of calls
// and of units of unrelated work (hashing + small allocations) done so far, so a benchmark can
// read rates before, during and after an experiment from outside.
package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

var table = map[int]string{1: "alice", 2: "bob"}
var errMissing = errors.New("missing")

//go:noinline
func Lookup(id int) (string, error) {
	if v, ok := table[id]; ok {
		return v, nil
	}
	return "", errMissing
}

// Version exists so a benchmark can hold an experiment that no hot path touches.
//
//go:noinline
func Version() int { return 1 }

func main() {
	fmt.Println("version", Version())
	g, _ := strconv.Atoi(os.Args[1])
	mode := os.Args[2] // "calls" or "work"
	var n atomic.Int64
	for i := 0; i < g; i++ {
		go func(i int) {
			var local int64
			buf := make([]byte, 64)
			for {
				if mode == "calls" {
					if _, err := Lookup(1 + i%2); err != nil && err != errMissing {
						panic(err)
					}
				} else {
					buf = append(buf[:0], byte(local))
					sum := sha256.Sum256(buf)
					buf = append(buf, sum[:]...)
				}
				local++
				if local&1023 == 0 {
					n.Add(1024)
				}
			}
		}(i)
	}
	fmt.Println("READY", os.Getpid())
	for {
		time.Sleep(250 * time.Millisecond)
		fmt.Printf("COUNT %d %d\n", time.Now().UnixNano(), n.Load())
	}
}
