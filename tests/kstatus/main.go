// Command kstatus prints what kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status), the rules Flux's
// health checks use, computes for one Kubernetes object: the object comes as JSON or YAML on
// stdin, the verdict goes to stdout as {"status": "...", "message": "..."}.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}

func run() error {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		return fmt.Errorf("reading the object from stdin: %w", err)
	}
	asJSON, err := yaml.YAMLToJSON(input)
	if err != nil {
		return fmt.Errorf("parsing the object: %w", err)
	}
	// Unstructured's own decoding keeps integers int64, as kstatus reads generations.
	object := &unstructured.Unstructured{}
	if err := object.UnmarshalJSON(asJSON); err != nil {
		return fmt.Errorf("parsing the object: %w", err)
	}
	result, err := status.Compute(object)
	if err != nil {
		return fmt.Errorf("computing the status: %w", err)
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]string{
		"status":  result.Status.String(),
		"message": result.Message,
	})
}
