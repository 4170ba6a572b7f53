// Command kstatus prints what kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status), the rules Flux's
// health checks use, computes for one Kubernetes object: the object comes as JSON or YAML on
// stdin, the verdict goes to stdout as {"status": "...", "message": "..."}.
//
// `kstatus cel CURRENT FAILED [IN_PROGRESS]` judges the object by the CEL expressions of a Flux
// Kustomization's `healthCheckExprs` instead, as Flux documents them: the object's top-level
// fields are the variables (metadata, spec, status), CEL's optional syntax is on, a status written
// for an older generation is InProgress, then inProgress, failed and current are tried in that
// order and the first that holds decides; none, or a field the object lacks: InProgress.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/google/cel-go/cel"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
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
	verdict := map[string]string{}
	if len(args) > 0 && args[0] == "cel" {
		if len(args) < 3 || len(args) > 4 {
			return fmt.Errorf("usage: kstatus cel CURRENT FAILED [IN_PROGRESS] < object")
		}
		inProgress := ""
		if len(args) == 4 {
			inProgress = args[3]
		}
		judged, err := judge(object.Object, args[1], args[2], inProgress)
		if err != nil {
			return err
		}
		verdict["status"] = judged
	} else {
		result, err := status.Compute(object)
		if err != nil {
			return fmt.Errorf("computing the status: %w", err)
		}
		verdict["status"] = result.Status.String()
		verdict["message"] = result.Message
	}
	return json.NewEncoder(os.Stdout).Encode(verdict)
}

func judge(object map[string]any, current, failed, inProgress string) (string, error) {
	generation, _, _ := unstructured.NestedInt64(object, "metadata", "generation")
	observed, found, _ := unstructured.NestedInt64(object, "status", "observedGeneration")
	if found && observed != generation {
		return "InProgress", nil
	}
	// Flux declares the object's usual top-level fields; a field the object lacks fails the
	// evaluation, and Flux keeps waiting (InProgress).
	options := []cel.EnvOption{cel.OptionalTypes()}
	for _, name := range []string{"apiVersion", "kind", "metadata", "spec", "status"} {
		options = append(options, cel.Variable(name, cel.DynType))
	}
	env, err := cel.NewEnv(options...)
	if err != nil {
		return "", err
	}
	for _, rule := range []struct{ verdict, expr string }{
		{"InProgress", inProgress}, {"Failed", failed}, {"Current", current},
	} {
		if rule.expr == "" {
			continue
		}
		ast, issues := env.Compile(rule.expr)
		if issues != nil && issues.Err() != nil {
			return "", fmt.Errorf("compiling %q: %w", rule.expr, issues.Err())
		}
		program, err := env.Program(ast)
		if err != nil {
			return "", err
		}
		out, _, err := program.Eval(object)
		if err != nil {
			return "InProgress", nil
		}
		if holds, ok := out.Value().(bool); ok && holds {
			return rule.verdict, nil
		}
	}
	return "InProgress", nil
}
