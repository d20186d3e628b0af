package main

import (
	"fmt"

	"github.com/zerodiff/zerodiff/internal/sd/pipeline"
)

func mergeLoRA(p *pipeline.Pipeline, path string, scale float64) error {
	return fmt.Errorf("--lora %s: pending", path)
}
